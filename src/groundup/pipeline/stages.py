"""Every `groundup` stage name and the module whose `main(argv)` runs it (the CLI and the speedrun share it)."""

# stage name -> module with `main(argv)`; imported lazily so `groundup --help` stays instant.
STAGES = {
    "world": "groundup.world.generate",
    "tokenizer": "groundup.train.tokenizer",
    "pretrain": "groundup.train.pretrain",
    "sft": "groundup.train.sft",
    "probe": "groundup.evaluate.probe",
    "dpo": "groundup.train.dpo",
    "surprisal-init": "groundup.train.surprisal_init",
    "eval": "groundup.evaluate.evaluation",
    "report": "groundup.pipeline.report",
    "chat": "groundup.evaluate.chat_cli",
    "push": "groundup.core.hub",
    "export": "groundup.export.gguf_file",
    "inspect": "groundup.evaluate.inspection",
    "speedrun": "groundup.pipeline.speedrun",
    "compare": "groundup.pipeline.compare",
}
