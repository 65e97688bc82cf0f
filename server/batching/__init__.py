"""Batching: TF Serving's BatchingParameters and a shared batch scheduler (plus Verso's
adaptive mode). Pure asyncio + numpy; the model call itself runs in the scheduler's executor."""
