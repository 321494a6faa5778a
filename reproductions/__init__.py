"""Report scripts of the studies' reproductions: finished MLflow runs -> the study pages' tables and figures."""
