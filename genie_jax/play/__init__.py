"""`genie play`: a local web page to steer a generated world with latent actions (see server.py)."""
