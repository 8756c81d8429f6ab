"""Export: model folders into the formats other tools read (GGUF for llama.cpp; `groundup export`)."""
