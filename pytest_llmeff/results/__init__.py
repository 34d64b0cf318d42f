"""What a run is, floor 3: the pydantic schema, the run-file reader and writer, storage, merge, history."""
