"""The docs' generated sections: the section writer every study uses, and the generators of the
figures that come from the shipped configs and the method registry (no study, no runs file)."""
