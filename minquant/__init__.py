"""minquant: model compression for edge deployment, from first principles."""
