// Placeholder so the verify layer library has a source until its code lands.
