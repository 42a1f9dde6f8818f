// Placeholder so the export layer library has a source until its code lands.
