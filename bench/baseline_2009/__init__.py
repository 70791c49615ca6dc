"""The 2009 Tokyo Tyrant + JSON Beaker backend, reconstructed as a baseline."""
