"""Offline benchmark builder: real photos and images from real neural generators."""
