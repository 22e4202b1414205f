"""MetricPoint (one measurement of a run) and RunLog (one line of a run's log)."""
from django.db import models


class MetricPoint(models.Model):
    """``value`` of metric ``name`` at ``step``, on the emulated and the wall clock.

    Unique on (run, name, step): ingestion of a retried batch inserts nothing twice.
    """

    run = models.ForeignKey("experiments.Run", on_delete=models.CASCADE, related_name="points")
    name = models.CharField(max_length=100)
    step = models.BigIntegerField()
    value = models.FloatField()
    sim_time_s = models.FloatField()
    wall_time_s = models.FloatField()

    class Meta:
        ordering = ["run", "name", "step"]
        constraints = [models.UniqueConstraint(fields=["run", "name", "step"],
                                               name="metric_point_unique_step")]

    def __str__(self) -> str:
        return f"{self.name}[{self.step}] = {self.value}"


class RunLog(models.Model):
    """Line number ``seq`` of a run's log, as its agent numbered it.

    Unique on (run, seq): a retried or resent batch stores nothing twice.
    """

    run = models.ForeignKey("experiments.Run", on_delete=models.CASCADE, related_name="logs")
    seq = models.BigIntegerField(help_text="The agent's number for this line, from 0")
    line = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "id"]
        indexes = [models.Index(fields=["run", "id"])]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="run_log_unique_seq")]

    def __str__(self) -> str:
        return self.line[:80]
