"""Training: ``tinyfleet train`` and ``tinyfleet eval`` for the grid models (``trainer``) and the liquid forecasters (``liquid``); ``args`` holds the torch-free command-line options."""
