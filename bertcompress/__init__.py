"""bertcompress: fine-tune, prune, quantize and evaluate BERT-family models on GLUE (core ML code only).

Knows nothing of Prefect or MLflow, so it runs anywhere torch and transformers do; flows/ and tasks/ drive it.
"""
