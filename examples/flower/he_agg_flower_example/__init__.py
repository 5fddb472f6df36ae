"""he_agg + Flower: encrypted FedAvg of a logistic regression on the breast-cancer data."""
