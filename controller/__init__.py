"""The sdlab controller: the Ray event loop, scheduling, safety gate, recovery, the
experiment store, the FastAPI app and the command line."""
