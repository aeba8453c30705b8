"""The MLflow adapter: tracking runs, model versions, aliases, lineage and browsing."""
