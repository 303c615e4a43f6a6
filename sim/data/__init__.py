"""Package data: the bundled CDNOW master file and the documented intervention priors."""
