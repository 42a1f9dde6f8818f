// Placeholder so the engine layer library has a source until its code lands.
