"""catalog: the searchable projection of products, workshops and availability."""
