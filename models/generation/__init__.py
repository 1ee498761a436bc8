"""Content generation: ideas, posts, images and their reflection rounds."""
