# The dashboard's summary of the history: the outcomes of each closed hour, counted once (one
# row per hour, unique), so that the day chart does not count a day of outcomes per page load.

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('background_tasks', '0006_history_status_index'),
    ]

    operations = [
        migrations.CreateModel(
            name='OutcomeHour',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('hour', models.DateTimeField(unique=True, verbose_name='hour')),
                ('succeeded', models.PositiveIntegerField(default=0, verbose_name='succeeded')),
                ('failed', models.PositiveIntegerField(default=0, verbose_name='failed')),
                ('cancelled', models.PositiveIntegerField(default=0, verbose_name='cancelled')),
                ('counted_at', models.DateTimeField(default=django.utils.timezone.now, verbose_name='counted at')),
            ],
            options={
                'verbose_name': 'outcome hour',
                'verbose_name_plural': 'outcome hours',
                'ordering': ['hour'],
            },
        ),
    ]
