"""raytune-ft: Ray Tune + Optuna hyperparameter search over the course's Accelerate fine-tuning loop."""

__version__ = "0.1.0"
