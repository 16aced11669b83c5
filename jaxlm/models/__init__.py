"""Model families assembled from `jaxlm.layers`."""
