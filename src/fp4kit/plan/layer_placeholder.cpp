// Placeholder so the plan layer library has a source until its code lands.
