"""A project written for django-background-tasks, with only its imports changed.

Every line that differs from the original says what it was; everything else is used the way
django-background-tasks' README and docs use it.
"""
