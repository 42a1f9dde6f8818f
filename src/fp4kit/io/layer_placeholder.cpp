// Placeholder so the io layer library has a source until its code lands.
