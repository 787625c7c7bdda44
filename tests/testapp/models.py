from django.db import models


class TaskRun(models.Model):
    """One row per execution of a test task, so tests can count runs exactly."""

    key = models.CharField(max_length=100, db_index=True)
    worker_pid = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key
