"""Record -> Event: which key made a request, the scope its route needs, the outcome."""
