"""Past one machine: the team tracking server (PostgreSQL + S3) and SageMaker as a training backend.

kiln server start          # mlflow server on PostgreSQL with S3 artifacts, from KILN_* settings
mlflow run . -e edgnet --backend sagemaker --backend-config sm.json
"""
