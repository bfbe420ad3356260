"""Demo data of Jaén: real towns, real crafts, products described in Spanish."""
