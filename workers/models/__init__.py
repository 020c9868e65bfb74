"""The tiny neural models, one readable file each with tensor shapes in comments: TRM and HRM."""
