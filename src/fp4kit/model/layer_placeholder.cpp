// Placeholder so the model layer library has a source until its code lands.
