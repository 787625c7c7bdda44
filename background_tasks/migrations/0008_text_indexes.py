# Plain B-tree indexes on the task name and hash (both tables) and on locked_by, and the unique
# unique_key, declared in Meta instead of db_index=True / unique=True: on PostgreSQL those also
# built a varchar_pattern_ops copy of each index, which no query uses and every write maintained.
# The new indexes and the constraint are created before the old ones are dropped, so that the
# columns are never without an index, nor unique_key without its uniqueness.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('background_tasks', '0007_outcome_hours'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='completedtask',
            index=models.Index(fields=['task_name'], name='bgtasks_completed_name'),
        ),
        migrations.AddIndex(
            model_name='completedtask',
            index=models.Index(fields=['task_hash'], name='bgtasks_completed_hash'),
        ),
        migrations.AddIndex(
            model_name='task',
            index=models.Index(fields=['task_name'], name='bgtasks_task_name'),
        ),
        migrations.AddIndex(
            model_name='task',
            index=models.Index(fields=['task_hash'], name='bgtasks_task_hash'),
        ),
        migrations.AddIndex(
            model_name='task',
            index=models.Index(fields=['locked_by'], name='bgtasks_task_locked_by'),
        ),
        migrations.AddConstraint(
            model_name='task',
            constraint=models.UniqueConstraint(fields=('unique_key',), name='bgtasks_task_unique_key'),
        ),
        migrations.AlterField(
            model_name='completedtask',
            name='task_hash',
            field=models.CharField(editable=False, max_length=40, verbose_name='task hash'),
        ),
        migrations.AlterField(
            model_name='completedtask',
            name='task_name',
            field=models.CharField(max_length=255, verbose_name='task name'),
        ),
        migrations.AlterField(
            model_name='task',
            name='locked_by',
            field=models.CharField(blank=True, max_length=255, null=True, verbose_name='locked by'),
        ),
        migrations.AlterField(
            model_name='task',
            name='task_hash',
            field=models.CharField(editable=False, max_length=40, verbose_name='task hash'),
        ),
        migrations.AlterField(
            model_name='task',
            name='task_name',
            field=models.CharField(max_length=255, verbose_name='task name'),
        ),
        migrations.AlterField(
            model_name='task',
            name='unique_key',
            field=models.CharField(blank=True, editable=False, max_length=64, null=True),
        ),
    ]
