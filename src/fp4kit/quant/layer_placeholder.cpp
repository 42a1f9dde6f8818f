// Placeholder so the quant layer library has a source until its code lands.
