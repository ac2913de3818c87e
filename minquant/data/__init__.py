"""Offline data and models: scikit-learn's digits and scikit-image's photos (``datasets``), the lesson's
TinyCNN and torchvision models with installed weights (``zoo``), a small training loop (``training``).
Imports torch and the core only; nothing is downloaded at run time."""
