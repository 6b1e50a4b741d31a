"""The task list of a suite that runs every task (mmengine ``_base_``): zero-shot retrieval and patch detection
test each pre-training checkpoint as it is; the other tasks fine-tune from it. A suite that runs fewer sets its own
``tasks``."""

tasks = ["retrieval_zeroshot", "patch_detection", "retrieval", "vqa", "nlvr2", "caption", "grounding"]
test_only = ["retrieval_zeroshot", "patch_detection"]
