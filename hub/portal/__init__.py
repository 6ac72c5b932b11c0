"""The feed portal for authority staff (``hub run portal``): the monthly placement feed in Japanese first,
English switchable; tables, revisions, a chart of the year, the consented individual list, downloads."""
