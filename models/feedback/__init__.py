"""People in the loop: the store of generated posts and feedback events, and feedback as evidence."""
