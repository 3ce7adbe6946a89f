"""From curvature to a step (Appendix B) and the baselines (Sec. 5)."""
