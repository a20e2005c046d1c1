"""Shared test set-up: quiet TensorFlow, deterministic seeds, and small synthetic data in tmp folders."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYTHONHASHSEED", "0")
