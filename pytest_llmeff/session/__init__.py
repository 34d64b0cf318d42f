"""One pytest session, floor 11: its state, start and finish, the fixtures, the marker, test ordering."""
