"""Fitting the models the entry points train: the book's Spark ML pipeline, the scikit-learn forests, and the
metrics they are evaluated with."""
