# The history's (status, finished_at) index: the dashboard's charts and latest failures and the
# workers' pruning read it as range scans. It leads with status, so the single-column status
# index it replaces is dropped (after the new one exists).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('background_tasks', '0005_handbacks'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='completedtask',
            index=models.Index(fields=['status', 'finished_at'], name='bgtasks_completed_status'),
        ),
        migrations.AlterField(
            model_name='completedtask',
            name='status',
            field=models.CharField(choices=[('succeeded', 'succeeded'), ('failed', 'failed'), ('cancelled', 'cancelled')], max_length=20, verbose_name='status'),
        ),
    ]
