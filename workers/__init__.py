"""Workers: pull jobs from a model group's stream, call the backend, publish replies."""
