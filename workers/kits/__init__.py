"""Task kits: for each skill its payload models, a seeded generator, an exact or classical solver, and its verifier."""
