"""vimage: a clonable network stack."""
