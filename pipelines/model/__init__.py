"""The recommender: SASRec, the baselines, ranking metrics and the distributed trainer."""
