"""Example agents built on tinyfleet: the planning agent (the main job) and the coding agent."""
