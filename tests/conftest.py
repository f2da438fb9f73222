import os

os.environ.setdefault("EXPLORER_DEVICE", "cpu")
