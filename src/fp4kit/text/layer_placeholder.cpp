// Placeholder so the text layer library has a source until its code lands.
