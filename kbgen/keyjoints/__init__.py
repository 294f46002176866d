"""Key-joint distributions (k_gt): noun phrases of a global description mapped to the joints of a spec."""
