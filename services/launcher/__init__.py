"""Running the whole marketplace on one machine: the process supervisor (and `make run`)."""
