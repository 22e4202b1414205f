"""MetricPoint (one measurement of a run), MetricBlock (the extremes of a block of a series'
steps) and RunLog (one line of a run's log)."""
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


#: Steps per MetricBlock: block ``k`` of a series holds steps ``k * BLOCK_STEPS`` to
#: ``(k + 1) * BLOCK_STEPS - 1``.
BLOCK_STEPS = 32


class MetricBlock(models.Model):
    """The stored points of one series in steps ``block * BLOCK_STEPS`` .. ``+ BLOCK_STEPS - 1``:
    how many, the first and last step, and the point of smallest and of largest value (the
    earliest step on ties), kept at ingestion (controlplane.metrics.blocks) so a long series is
    downsampled from about 1/BLOCK_STEPS as many rows (controlplane.metrics.downsample)."""

    run = models.ForeignKey("experiments.Run", on_delete=models.CASCADE, related_name="blocks")
    name = models.CharField(max_length=100)
    block = models.BigIntegerField()
    count = models.IntegerField()
    first_step = models.BigIntegerField()
    last_step = models.BigIntegerField()
    min_step = models.BigIntegerField()
    min_value = models.FloatField()
    min_sim_time_s = models.FloatField()
    min_wall_time_s = models.FloatField()
    max_step = models.BigIntegerField()
    max_value = models.FloatField()
    max_sim_time_s = models.FloatField()
    max_wall_time_s = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "name", "block"],
                                               name="metric_block_unique")]

    def __str__(self) -> str:
        return f"{self.name}[block {self.block}]"


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
