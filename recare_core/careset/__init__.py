"""The CARE-set pipeline: joint image-text CLIP, vocabulary, word hygiene, selection, files and plots."""
