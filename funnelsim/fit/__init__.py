"""Fitting funnelsim models to a company's own history."""
