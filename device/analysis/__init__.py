"""Window to score: the one log-mel front end, the model file and its metadata, int8 inference and the Gaussian scorer."""
